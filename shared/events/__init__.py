"""Event-driven onboarding: bucket notifications and plain JSON requests in, completion events
and signed webhooks out. See docs/EVENTS.md."""
