"""The Hub: verified, resumable transfers and archives streamed straight into the dataset."""
