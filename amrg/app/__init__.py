"""What a person looks at: the static `report.html` of a run."""
