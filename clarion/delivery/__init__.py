"""The send pipeline: triggers become message rows, workers claim and send them, every state
change appends a message event. The ledger (these tables) is the queue."""
