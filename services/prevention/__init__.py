"""Prevention work's reads and reports (issue #22): the prevention view fed from the event
store, and the quarterly report for the Humanitarian Coordinator."""
