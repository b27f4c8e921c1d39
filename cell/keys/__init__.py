"""API keys of the projects homed here: the bcrypt hashes live only in this cell."""
