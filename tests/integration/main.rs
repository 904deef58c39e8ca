mod apply;
mod cluster;
mod harness;
mod smoke;
