"""Server-Server behaviour: transactions, joins and invites both ways, EDUs, queries, serving."""
