"""What a running task sees: the context and the state accessors."""
