"""The dependency locks: how they are made (lock.sh) and checked."""
