"""`payhook bench`: payhook against references that share none of its code."""
