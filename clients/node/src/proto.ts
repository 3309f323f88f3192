/**
 * Loading the skillsvc.v1 contract at run time from the repository's `.proto` files:
 * `@grpc/proto-loader` builds the gRPC service definition, and a protobufjs root of
 * the same files decodes the rich error details (`google.rpc.Status` and the
 * `Any` messages inside it) that proto-loader leaves as bytes.
 */

import { existsSync } from "node:fs";
import * as path from "node:path";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import * as protobuf from "protobufjs";

/** The contract's entry file, relative to a proto directory. */
export const SERVICE_PROTO = "skillsvc/v1/skill_service.proto";

/**
 * The repository's proto directories, found from this package's location
 * (`clients/node/dist/src` → the checkout root): `protos/` and `third_party/protos/`.
 */
export function defaultProtoDirs(): string[] {
  const repoRoot = path.resolve(__dirname, "..", "..", "..", "..");
  return [path.join(repoRoot, "protos"), path.join(repoRoot, "third_party", "protos")];
}

// google/rpc/error_details.proto, the three messages skillsvc sends (field numbers
// and names as in googleapis; only these are needed to read the details).
const ERROR_DETAILS_PROTO = `
syntax = "proto3";
package google.rpc;
message ErrorInfo {
  string reason = 1;
  string domain = 2;
  map<string, string> metadata = 3;
}
message BadRequest {
  message FieldViolation {
    string field = 1;
    string description = 2;
  }
  repeated FieldViolation field_violations = 1;
}
message QuotaFailure {
  message Violation {
    string subject = 1;
    string description = 2;
  }
  repeated Violation violations = 1;
}
`;

/** The loaded contract: a service client constructor and a details decoder root. */
export interface LoadedContract {
  /** Constructor of the `skillsvc.v1.SkillService` client. */
  serviceClient: grpc.ServiceClientConstructor;
  /** protobufjs types of the same files plus google.rpc error details. */
  root: protobuf.Root;
}

const cache = new Map<string, LoadedContract>();

/** Load (once per set of directories) the contract from `protoDirs`. */
export function loadContract(protoDirs: readonly string[] = defaultProtoDirs()): LoadedContract {
  const key = protoDirs.join("\0");
  const cached = cache.get(key);
  if (cached !== undefined) {
    return cached;
  }
  const definition = protoLoader.loadSync(SERVICE_PROTO, {
    includeDirs: [...protoDirs],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    skillsvc: { v1: { SkillService: grpc.ServiceClientConstructor } };
  };
  const root = new protobuf.Root();
  root.resolvePath = (_origin: string, target: string): string | null => {
    for (const dir of protoDirs) {
      const candidate = path.join(dir, target);
      if (existsSync(candidate)) {
        return candidate;
      }
    }
    // google/protobuf/*.proto: protobufjs ships those definitions itself.
    return target;
  };
  root.loadSync(SERVICE_PROTO, { keepCase: true });
  protobuf.parse(ERROR_DETAILS_PROTO, root, { keepCase: true });
  root.resolveAll();
  const contract = { serviceClient: loaded.skillsvc.v1.SkillService, root };
  cache.set(key, contract);
  return contract;
}
