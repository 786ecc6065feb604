/** The development identities `npm start` prints tokens for and Studio's dev token picker offers. */
export const DEMO_USER_ID = '00000000-0000-4000-8000-000000000001';
export const SECOND_DEMO_USER_ID = '00000000-0000-4000-8000-000000000002';

export const DEV_USERS: readonly { label: string; userId: string }[] = [
  { label: 'Demo user', userId: DEMO_USER_ID },
  { label: 'Second demo user', userId: SECOND_DEMO_USER_ID },
];
