"""Buffers between the pipeline and a sink: the disk spool."""
