"""Caption commands are registered here (filled in by the captioning stage)."""
