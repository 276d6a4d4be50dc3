"""Voice and video calls: TURN credentials for the clients' media relays."""
