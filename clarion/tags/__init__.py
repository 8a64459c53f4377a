"""Project tags and their application to other resources (campaigns, lists, journeys)."""
