//! fedhub history store (datanommer + datagrepper).
