"""The ground floor: atomic files, fault points for the crash tests, child processes.

Imports nothing of activelearn's.
"""
