"""The relay: publishes the event store's notification log as contract messages."""
