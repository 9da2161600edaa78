//! JMUX over any byte stream.
