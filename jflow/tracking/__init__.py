"""Point tracking and 3D object-flow extraction from video."""
