"""Topic-based subscriptions (R5 Backport): topics, matching from the outbox, delivery."""
