"""Generated protobuf and gRPC code for skillsvc.v1. Do not edit: run `make proto`."""
