// Placeholder: replaced by the accuracy study.
int main() { return 0; }
