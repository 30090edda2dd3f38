"""The complaint-handling domain of an inter-agency PSEA network. Pure: no I/O, no clock."""
