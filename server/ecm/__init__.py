"""Program policy: ECM eligibility rules (versioned data, each rule citing its clause).

Nothing here knows HTTP or SQL: the operations of ``server/operations/`` gather a member's
resources and hand them over as a :class:`~server.ecm.record.MemberRecord`.
"""
