"""newsletter-mailer: compose once, personalise cheaply.

The package reads like the pipeline: schema → render → compile → inline →
personalise → message → deliver (providers), with the ledger recording sends.
"""

__version__ = "0.1.0"
