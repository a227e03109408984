"""Sources: where message-trace rows come from (files, Graph, the Reporting Web Service)."""
