"""The audit trail: what every interaction touched, who asked, and the AuditEvent view."""
