"""People and their roles: users, passwords, personal API tokens and web sessions."""
