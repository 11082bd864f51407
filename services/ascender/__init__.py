"""The ascender service."""
