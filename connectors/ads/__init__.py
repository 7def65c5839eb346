"""Ad-platform connectors: a budget port and its adapters."""
