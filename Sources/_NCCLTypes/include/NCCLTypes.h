// The two NCCL declarations Swift cannot spell itself: the 128-byte unique id, passed by value to
// ncclCommInitRank, and that function's type. Layout and signature follow nccl.h; the library itself is
// loaded at run time (no NCCL header or library is needed to build).
#ifndef DISTFLASH_NCCL_TYPES_H
#define DISTFLASH_NCCL_TYPES_H

typedef struct {
    char internal[128];
} DistFlashNCCLUniqueId;

// ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank);
typedef int (*DistFlashNCCLCommInitRank)(void **comm, int nranks, DistFlashNCCLUniqueId commId, int rank);

#endif
