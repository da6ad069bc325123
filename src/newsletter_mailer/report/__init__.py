"""`newsletter report`: how an issue did, from the ledger, the audience store and SendGrid,
as a terminal table and a self-contained page with charts."""
