"""The ground floor: what every other floor needs, importing nothing above it."""
