"""skillsvc: installs, validates, versions and rolls back agent skill packages.

Importing this package has no side effects and pulls in no server dependencies, so
clients can ``import skillsvc.v1`` for the generated stubs alone.
"""

__version__ = "0.1.0"
