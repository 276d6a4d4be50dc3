"""The media repository: uploads, downloads, thumbnails, remote media, URL previews."""
