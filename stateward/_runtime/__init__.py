"""The actor system: messages, the supervisor, clients, the runner and the runtime."""
