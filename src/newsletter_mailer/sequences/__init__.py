"""Welcome emails and sequences: steps (issue files) sent to each reader on their own schedule.

model.py reads sequences/<name>.yaml; members.py keeps who is in which sequence (the store);
run.py sends what is due, each step through the ledger like a send; status.py counts.
"""
