"""Writing both stores: materialization jobs, their schedule, and pushes."""
