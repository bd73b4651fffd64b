"""Gismo: Ray objects kept once in shared (CXL) memory and read in place from any attached node."""
