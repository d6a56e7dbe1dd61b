/* SPDX-License-Identifier: MIT */
/* The one way our CUnit suites run and report. */
#pragma once

#include <CUnit/Basic.h>

/*
 * Runs every registered suite verbosely and cleans the registry up.
 * Returns the process exit status: 1 if any assertion failed or CUnit itself
 * failed, else 0. (CU_get_error() alone reports success when assertions
 * failed: a trap this helper exists to avoid.)
 */
static inline int cunit_run_all(void) {
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failures = CU_get_number_of_failure_records();
  CU_ErrorCode e = CU_get_error();
  CU_cleanup_registry();
  return (failures != 0 || e != CUE_SUCCESS) ? 1 : 0;
}
