"""The Open Responses server (``allm serve``)."""
