"""The micro-step instruction set both engines interpret.

KVM's code paths are written once (engine/programs.py) as small programs over this
instruction set; the Cython core and the pure-Python twin are two interpreters of it.
An instruction is either *local* (register-only work: it joins the next shared step) or
*shared* (it touches shared state and is one interleaving point: a descriptor load or
store, an exclusive, a compare-and-swap, a lock operation, a TLB invalidation, or one
step of a hardware walk).  Like engine/bits.py, every constant here is exported to the C
header the core includes, so there is one definition.
"""

# --- Registers (per actor) --------------------------------------------------------------
NREGS = 28
R0, R1, R2, R3 = 0, 1, 2, 3  # general purpose
PTR = 4  # address of the descriptor being operated on (a kernel `pte_t *`)
IPA = 5  # the operation's address (a gfn loop's cursor)
END = 6  # exclusive end of the op's IPA range
CUR = 7  # range-walk cursor
LEVEL = 8  # level of the entry at PTR
WLEVEL = 9  # walk cursor level
WT0 = 10  # WT0..WT3: table address being walked at levels 0..3
RET = 14  # the operation's return value (young, ...)
STATUS = 15  # stxr/cas status; the fault type after a faulting access
PHASE = 16  # hardware access phase: 0 start (TLB lookup), 1 walking, 2 atomic update
HWOLD = 17  # the descriptor the walker evaluated
HWNEW = 18  # the descriptor it means to write (AF / dirty state set)
WRITE = 19  # the access is a store
EIPA = 20  # IPA of the entry at PTR (aligned to its level), set by the walks
FAULTS = 21  # stage-2 faults this vCPU took, over all its operations (kept across ops),
#              counted only when a scenario asks (MachineSpec.count_faults), up to FAULTS_MAX
FAULTS_MAX = 3  # "3" reads "3 or more": a bound keeps spinning schedules finite
FLEVEL = 22  # the level of the entry a hardware walk faulted on (ESR_EL2 ...FSC level)
LOG = 23  # memslot_is_logging() for the fault's IPA, as OP_MEMSLOT found it
TLEVEL = 24  # the level a map installs its leaf at (log2 of vma_pagesize)
VISIT = 25  # what OP_RWALK visited: VISIT_LEAF / VISIT_TABLE_POST / VISIT_TABLE_PRE
AUX = 26  # get_dirty_log: the dirty-bitmap word cursor
PEND = 27  # OP_RWALK with TABLE_POST: tables finished by the last step, still to visit

# --- Opcodes --------------------------------------------------------------------------
# Instruction encoding: (opcode, a, b, c). `k` operands index the program's constant pool.
# Local:
OP_MOV = 0  # a = b
OP_MOVK = 1  # a = K[b]
OP_AND = 2  # a = b & K[c]
OP_ANDN = 3  # a = b & ~K[c]
OP_ORR = 4  # a = b | K[c]
OP_BZ = 5  # if (a & K[b]) == 0: goto c
OP_BNZ = 6  # if (a & K[b]) != 0: goto c
OP_BEQ = 7  # if a == b (registers): goto c
OP_B = 8  # goto a
OP_BLT = 9  # if reg a < reg b: goto c
OP_ADDK = 10  # a = b + K[c]
OP_MEMSLOT = 11  # a = K[b] (page) / K[c] (block) | PA for IPA's memslot, LEVEL = its leaf
#                   level; a = 0 if IPA is in no memslot
OP_END = 12  # the operation ends
OP_WALK_INIT = 13  # start a walk at the start level (a = 1: a range walk, CUR = IPA page)
OP_TLB_IPA_LOCAL = 14  # drop this CPU's TLB entries for IPA (TLBI ...NSH from the fault path)
OP_BEQK = 15  # if a == K[b]: goto c
OP_BNEK = 16  # if a != K[b]: goto c
OP_EOR = 17  # a = b ^ c (registers)
OP_ORRR = 18  # a = b | c (registers)
# Shared (one micro-step each):
OP_ALLOC = 19  # a = a zeroed table page from the memory cache, as a table descriptor
#               (mmu_memory_cache_alloc / mm_ops->zalloc_page): a page OP_FREE gave back,
#               else table memory grows by a page. A table that was ever linked is never
#               reused, so a freed table keeps its contents
OP_DESCEND = 30  # the table descriptor in reg a was installed (or reloaded) at PTR: the
#                  walk in progress continues in it (WLEVEL, WT, and CUR for range walks)
OP_TABLE_EMPTY = 31  # a = 1 if the table the descriptor in reg b points to holds no valid
#                      entry (its page refcount is 1) and is not the start-level table
OP_LOG_TRACK = 32  # log_start has finished: writes to [IPA, END) must reach the dirty log
OP_FREE = 33  # the table page of the descriptor in reg a, never linked, goes back: OP_ALLOC
#               hands out such pages again (and only such pages)
OP_LOCAL_END = 40  # opcodes below are local, from here on shared
# Shared (one micro-step each):
OP_LOCK = 40  # a = lock mode
OP_UNLOCK = 41  # a = lock mode
OP_LOAD = 42  # a = [PTR]
OP_STORE = 43  # [PTR] = a; K[b] = the bits this operation means to change
OP_LDXR = 44  # a = [PTR], set the exclusive monitor
OP_STXR = 45  # [PTR] = b if the monitor holds; a = status (0 ok, 1 failed); K[c] = meant bits
OP_CAS = 46  # cmpxchg([PTR], expected a, new b): a = value seen; STATUS = 0 ok / 1 failed; K[c]
OP_TLBI_IPA = (
    47  # broadcast invalidation of the entries for the IPA in reg a (kvm_tlb_flush_vmid_ipa)
)
OP_TLBI_ALL = 48  # kvm_flush_remote_tlbs: invalidate the VMID on every CPU
OP_SWALK = 49  # software walk to the leaf entry for IPA, one table load per step. c = 0: stop
#                at the first block (loaded, value in a) or at level 3 (not loaded);
#                c = 1: stop at the level in LEVEL (not loaded). PTR, LEVEL, EIPA = the entry;
#                an invalid table entry on the way -> a = it, goto b
OP_RWALK = 50  # range walk over [CUR, reg c >> 4): loads every entry in order (one per step),
#                descends tables; a leaf -> a, PTR, LEVEL, EIPA = it, VISIT = VISIT_LEAF,
#                fall through; invalid entries are skipped unless c & RWALK_VISIT_INVALID;
#                c & RWALK_TABLE_PRE: a valid table at level TLEVEL is visited (VISIT_TABLE_PRE)
#                instead of descended; c & RWALK_TABLE_POST: each table the walk finishes
#                (PEND counts them) is visited once more, without a load (VISIT_TABLE_POST,
#                a = its descriptor, PTR = the entry pointing to it); range done -> goto b
OP_HW_ACCESS = 51  # the hardware: TLB lookup, stage-2 walk, AF/DBM update of IPA (WRITE says
#                    load or store); completes -> pc + 1; faults -> goto b, STATUS = fault type,
#                    FLEVEL = the faulting entry's level
OP_MARK_DIRTY = 52  # mark_page_dirty(): the page of IPA goes into the dirty bitmap
OP_LOG = 53  # a = 1: KVM_MEM_LOG_DIRTY_PAGES set on [IPA, END) (the new memslot is
#              installed); a = 0: cleared
OP_HARVEST = 54  # kvm_get_dirty_log_protect: mask = xchg(&dirty_bitmap[AUX], 0) over the
#                  64-page word at AUX (within [IPA, END)); the pages go to `harvested`;
#                  R0 = mask != 0, CUR = first dirty page, R3 = last dirty page + 4K (the
#                  range kvm_mmu_write_protect_pt_masked write-protects); AUX = next word
OP_TLB_EVICT = 55  # the hardware evicts every entry of vCPU reg a's TLB (machine.tlb_evict)

RWALK_VISIT_INVALID = 1
RWALK_TABLE_POST = 2
RWALK_TABLE_PRE = 4
VISIT_LEAF = 0
VISIT_TABLE_POST = 1
VISIT_TABLE_PRE = 2
DIRTY_WORD_PAGES = 64  # pages per dirty-bitmap word (BITS_PER_LONG)

# --- Lock modes (kvm->mmu_lock) --------------------------------------------------------
LOCK_SPIN = 0  # spin_lock (v4.6, seed)
LOCK_READ = 1  # read_lock (v6.6 rwlock)
LOCK_WRITE = 2  # write_lock (v6.6 rwlock)

# --- Fault types (ESR_EL2.DFSC family) -----------------------------------------------
FAULT_NONE = 0
FAULT_TRANSLATION = 1
FAULT_ACCESS_FLAG = 2
FAULT_PERMISSION = 3

# --- Event kinds (one event record per micro-step) ------------------------------------------
EV_LOAD = 0
EV_STORE = 1
EV_LDXR = 2
EV_STXR_OK = 3
EV_STXR_FAIL = 4
EV_CAS_OK = 5
EV_CAS_FAIL = 6
EV_WALK = 7  # a hardware walk read a descriptor (the access completes if it was the leaf)
EV_HW_UPDATE = 8  # the walker's atomic AF/dirty update succeeded
EV_HW_UPDATE_FAIL = 9  # ... found the descriptor changed: evaluation restarts from it
EV_FAULT = 10  # a hardware walk read a descriptor that faults (detail names the fault)
EV_TLB_HIT = 11  # the access was translated by the vCPU's TLB
EV_LOCK = 12
EV_UNLOCK = 13
EV_TLBI = 14
EV_MARK_DIRTY = 15  # a page went into the dirty bitmap
EV_LOG = 16  # dirty logging started (detail 1) or stopped (detail 0) on [ipa, new)
EV_HARVEST = 17  # a dirty-bitmap word was harvested and cleared (old = the mask)
# Kinds that write a descriptor (the table holding it, and the counters of every table
# above it, change), and those that change the dirty log.
WRITE_KINDS = frozenset((EV_STORE, EV_STXR_OK, EV_CAS_OK, EV_HW_UPDATE))
DIRTY_LOG_KINDS = frozenset((EV_LOG, EV_MARK_DIRTY, EV_HARVEST))

# --- Event flags ------------------------------------------------------------------------
EVF_TLB_FILL = 1  # the step filled the vCPU's TLB
EVF_OP_DONE = 2  # the step completed the actor's operation
EVF_LOST_UPDATE = 4  # the store reverted bits its operation never meant to change
EVF_BBM = 8  # the store broke break-before-make

# --- Checks -----------------------------------------------------------------------------
CHECK_NO_LOST_UPDATE = 0
CHECK_BREAK_BEFORE_MAKE = 1
CHECK_NO_LOST_DIRTY = 2

# --- Actor kinds ------------------------------------------------------------------------
KIND_VCPU = 0
KIND_HOST = 1

TLB_ENTRIES = 64  # per vCPU, FIFO replacement

EVENT_KIND_NAMES = (
    "load",
    "store",
    "ldxr",
    "stxr-ok",
    "stxr-fail",
    "cas-ok",
    "cas-fail",
    "walk",
    "hw-update",
    "hw-update-fail",
    "fault",
    "tlb-hit",
    "lock",
    "unlock",
    "tlbi",
    "mark-dirty",
    "log",
    "harvest",
)
FAULT_NAMES = ("", "translation", "access-flag", "permission")
LOCK_MODE_NAMES = ("spin", "read", "write")
CHECK_NAMES = ("no_lost_update", "break_before_make", "no_lost_dirty")
SHARED_OPCODES = frozenset(range(OP_LOCK, OP_TLB_EVICT + 1))
TLBI_NAMES = ("ipa", "all", "evict")  # EV_TLBI detail: by IPA, the VMID, a TLB eviction
