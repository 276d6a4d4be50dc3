"""Media repository plumbing: content-addressed files, thumbnails, URL previews."""
