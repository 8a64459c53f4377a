"""Settings, identifiers, storage and the generic due-work machinery shared by every domain."""
