"""SemAlign3D: semantic correspondence through aligning 3D object-class representations.

Importing the package is cheap: it loads no model and never touches the network.
"""

__version__ = "0.1.0"
