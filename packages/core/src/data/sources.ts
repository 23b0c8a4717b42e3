/** Public datasets `ferry data pull` knows. */
export interface DatasetSource {
  readonly name: string;
  readonly url: string;
  readonly fileName: string;
  /**
   * Pinned SHA-256 of the archive. null where it could not be verified when this entry was written
   * (the build machine has no route to the host): the first download's digest is then recorded
   * beside the archive and every later use is checked against it.
   */
  readonly sha256: string | null;
  /** What the archive extracts to, for `ferry data import`. */
  readonly importAs: 'hymenoptera';
}

export const DATASET_SOURCES: readonly DatasetSource[] = [
  {
    name: 'hymenoptera',
    url: 'https://download.pytorch.org/tutorial/hymenoptera_data.zip',
    fileName: 'hymenoptera_data.zip',
    sha256: null,
    importAs: 'hymenoptera',
  },
];
