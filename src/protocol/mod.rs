//! Native protocol v1 (being written).
