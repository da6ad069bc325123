from newsletter_mailer.cli import main

main()
