//! Landlock confinement of agent process trees (filled in by the sandbox work).
