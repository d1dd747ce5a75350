"""Bulk data: ``$export`` (FHIR Bulk Data Access 2.0) into NDJSON files on disk, and NDJSON
import. ``request`` parses a kick-off, ``export`` runs one as an asynchronous job, ``files``
keeps its output folder."""
