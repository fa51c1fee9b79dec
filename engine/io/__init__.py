"""Reading and writing: recordings, probe geometry, phy folders, session folders, atomic files."""
