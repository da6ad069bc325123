// Prints doiuse-email's (caniemail data) errors for an HTML file, for Gmail, Outlook and Apple Mail,
// as sorted unique JSON lines: tests/test_doiuse_email.py compares them with a committed baseline.
import { doIUseEmail } from 'doiuse-email';
import { readFileSync } from 'node:fs';

const result = doIUseEmail(readFileSync(process.argv[2], 'utf8'),
  { emailClients: ['gmail.*', 'outlook.*', 'apple-mail.*'] });
console.log(JSON.stringify([...new Set(result.errors || [])].sort(), null, 1));
