"""The `.pemn` file format v1: container, codecs, reader (torch-free), writer, summary."""
