"""The tutor: chat, MCQA mode, server, audit log and review."""
