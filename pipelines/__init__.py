"""Ray Data batch jobs: read -> parse -> chunk -> embed -> write a versioned index."""
